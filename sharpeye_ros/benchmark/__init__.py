"""Speed, latency and memory benchmarks that write docs/benchmarks.md."""
