# The Python image of Phonoglyph's api, worker and collector (one image, three commands; docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY instrumentation ./instrumentation
COPY collector ./collector
COPY services ./services
RUN pip install . \
    && groupadd --system --gid 10001 phonoglyph \
    && useradd --system --uid 10001 --gid phonoglyph --home-dir /app --shell /usr/sbin/nologin phonoglyph \
    && mkdir -p /var/lib/phonoglyph /var/lib/phonoglyph-collector \
    && chown phonoglyph:phonoglyph /var/lib/phonoglyph /var/lib/phonoglyph-collector

# Volumes mounted here start owned by the unprivileged user (docker copies the ownership of the image's
# directory into an empty named volume).
VOLUME ["/var/lib/phonoglyph", "/var/lib/phonoglyph-collector"]
USER phonoglyph

EXPOSE 8000 4318
CMD ["python", "-m", "services.api", "--host", "0.0.0.0", "--port", "8000"]
