# smtp-health-exporter: slim Python image, non-root, config at /etc/smtp-health-exporter/.
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="smtp-health-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the health of SMTP servers"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first, in a layer of their own, from pyproject.toml alone: a change to the
# code rebuilds only the small layer below.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf /src \
    && useradd --system --uid 10525 --no-create-home --shell /usr/sbin/nologin exporter \
    && mkdir -p /etc/smtp-health-exporter

# Mount a directory holding config.yml and the secret files it names (password_file paths
# are relative to config.yml):
#   docker run -v "$PWD/config:/etc/smtp-health-exporter:ro" -p 10525:10525 IMAGE
WORKDIR /
USER 10525
EXPOSE 10525

# The check reads the flags of the exporter (PID 1, or the process after an init's "--")
# and asks its /-/healthy the way its --web.config.file says: HTTPS, basic auth (a 401
# asking for credentials counts as alive) and a changed --web.listen-address all followed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["smtp-health-exporter", "--healthcheck", "--healthcheck.of-pid=1"]

ENTRYPOINT ["smtp-health-exporter"]
CMD ["--config.file=/etc/smtp-health-exporter/config.yml", "--web.listen-address=:10525"]
