FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    NASHRA_VAR_DIR=/var/lib/nashra LOG_FORMAT=json

RUN useradd --system --create-home --home-dir /app nashra \
 && mkdir -p /var/lib/nashra && chown nashra /var/lib/nashra
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY migrations ./migrations
COPY templates ./templates
# Editable: templates/ and migrations/ are read from the source tree beside the package.
RUN pip install -e .
USER nashra
EXPOSE 8000
CMD ["nashra", "web", "--host", "0.0.0.0", "--port", "8000"]
