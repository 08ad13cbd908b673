# smtp-health-exporter: slim Python image, non-root, config at /etc/smtp-health-exporter/.
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="smtp-health-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the health of SMTP servers"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir . \
    && rm -rf /src \
    && useradd --system --uid 10525 --no-create-home --shell /usr/sbin/nologin exporter \
    && mkdir -p /etc/smtp-health-exporter

# Mount your configuration (and its secret files) here:
#   docker run -v "$PWD/config.yml:/etc/smtp-health-exporter/config.yml:ro" -p 10525:10525 IMAGE
WORKDIR /
USER 10525
EXPOSE 10525

# The exporter answers /-/healthy as soon as it serves; python is in the image, curl is not.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:10525/-/healthy', timeout=4).status != 200)"]

ENTRYPOINT ["smtp-health-exporter"]
CMD ["--config.file=/etc/smtp-health-exporter/config.yml", "--web.listen-address=:10525"]
