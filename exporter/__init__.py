"""smtp-health-exporter: Prometheus exporter for the health of SMTP servers."""

__version__ = "0.1.0"
