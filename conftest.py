"""Root pytest config: which modules' doctests are collected."""

# Service entry points start servers or load models at import; their logic is tested in tests/.
collect_ignore_glob = ["serving/*_service.py", "stream_apps/*_app.py", "driftstream/demo.py", "benchmarks/*"]
