"""One typed settings object for every process of the pipeline.

Values come from environment variables prefixed ``DRIFTSTREAM_`` (for example
``DRIFTSTREAM_KAFKA_PORT=29092``) and from an optional ``.env`` file in the working
directory. Every setting is documented in the README.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTSTREAM_", env_file=".env", extra="ignore")

    # --- where state lives ---------------------------------------------------------
    state_dir: Path = Field(Path(".state"), description="Data, logs and pid files of every component.")
    host: str = Field("127.0.0.1", description="Interface every local component binds.")

    # --- Kafka ---------------------------------------------------------------------
    kafka_port: int = Field(19092, description="Kafka broker listener.")
    kafka_controller_port: int = Field(19192, description="KRaft controller listener.")
    kafka_bootstrap: str | None = Field(None, description="Override the broker list (compose: kafka:9092).")
    kafka_heap: str = Field("768m", description="Kafka JVM heap (-Xmx).")
    kafka_partitions: int = Field(4, ge=1, description="Partitions of every data topic.")
    kafka_max_message_bytes: int = Field(16 * 1024 * 1024, description="Largest Kafka message.")

    # --- S3 (SeaweedFS locally, MinIO in compose) -----------------------------------
    s3_port: int = Field(18333, description="S3 API port.")
    s3_master_port: int = Field(19333, description="SeaweedFS master port (gRPC at +10000).")
    s3_volume_port: int = Field(18080, description="SeaweedFS volume port (gRPC at +10000).")
    s3_filer_port: int = Field(18888, description="SeaweedFS filer port (gRPC at +10000).")
    s3_admin_port: int = Field(18646, description="SeaweedFS admin port (gRPC at +10000; UI disabled).")
    s3_access_key: str = Field("driftstream", description="S3 access key id.")
    s3_secret_key: str = Field("driftstream-local-secret", description="S3 secret key.")
    s3_bucket: str = Field("driftstream", description="Bucket for claim-checks, windows and reports.")
    s3_endpoint_url: str | None = Field(None, description="Override the S3 endpoint (compose: MinIO).")

    # --- Prometheus and Alertmanager -----------------------------------------------
    prometheus_port: int = Field(19090, description="Prometheus HTTP port.")
    alertmanager_port: int = Field(19093, description="Alertmanager HTTP port.")
    scrape_interval: str = Field("2s", description="Prometheus scrape interval.")
    evaluation_interval: str = Field("2s", description="Prometheus rule evaluation interval.")

    # --- alert receivers (secrets: set them in the environment or .env, never commit them) ---
    smtp_host: str | None = Field(None, description="SMTP relay host:port for medium/low alerts (email).")
    smtp_user: str | None = Field(None, description="SMTP user.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (written to a 0600 file).")
    smtp_from: str | None = Field(None, description="Sender address of alert email.")
    alert_email_to: str | None = Field(None, description="Recipient of medium/low alerts.")
    pager_webhook_url: str | None = Field(None, description="Pager webhook for critical alerts.")
    summary_interval_s: float = Field(3600.0, gt=0, description="Period of the batch summary job.")
    publish_enabled: bool = Field(True, description="Services publish events (off only for benchmarks).")

    # --- services and workers --------------------------------------------------------
    detector_port: int = Field(13000, description="Detector BentoML service port.")
    detector_inference_threads: int = Field(
        1, ge=1, le=64, description="Threads of one detector inference (1 leaves a core for publishing on 2 CPUs).")
    recommender_port: int = Field(13001, description="Recommender BentoML service port.")
    stream_detector_metrics_port: int = Field(16066, description="Detector stream worker metrics/web port.")
    stream_recommender_metrics_port: int = Field(16067, description="Recommender stream worker metrics port.")
    batch_metrics_port: int = Field(16070, description="Batch worker metrics port.")
    alerts_receiver_port: int = Field(15001, description="Local webhook receiver for Alertmanager.")

    # --- publishing ------------------------------------------------------------------
    claim_check_bytes: int = Field(256 * 1024, description="Inputs above this size go to S3 (claim-check).")
    spool_max_bytes: int = Field(256 * 1024 * 1024, description="Cap of the durable local spool.")
    publish_linger_ms: int = Field(50, ge=0, le=1000, description="How long the producer waits to fill a batch (ms).")

    # --- windows and drift ----------------------------------------------------------
    window_preset: Literal["default", "short"] = Field("default", description="'short' for tests/demo.")
    window_size_s: float = Field(300.0, gt=0, description="Hopping window size (event time).")
    window_hop_s: float = Field(30.0, gt=0, description="Hopping window hop.")
    tumbling_size_s: float = Field(300.0, gt=0, description="Tumbling (archived) window size.")
    window_grace_s: float = Field(30.0, ge=0, description="Late events are accepted this long.")
    false_alarms_per_day: float = Field(0.1, gt=0, description="Expected model-level false alarms a day.")
    low_confidence_threshold: float = Field(0.5, ge=0, le=1, description="Confidence below this is 'low'.")

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.host}:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return self.s3_endpoint_url or f"http://{self.host}:{self.s3_port}"

    @cached_property
    def abs_state_dir(self) -> Path:
        return self.state_dir.resolve()

    def effective_windows(self) -> tuple[float, float, float, float]:
        """(size, hop, tumbling, grace) after applying the preset."""
        if self.window_preset == "short":
            return (20.0, 5.0, 20.0, 5.0)
        return (self.window_size_s, self.window_hop_s, self.tumbling_size_s, self.window_grace_s)


def get_settings() -> Settings:
    """A fresh settings object (cheap; never cached globally so tests can change env)."""
    return Settings()


def settings_table() -> str:
    """The README's settings table (``python -m driftstream.settings``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        rows.append(f"| `DRIFTSTREAM_{name.upper()}` | `{default}` | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
