# Stage 1 builds the wheel; the image installs it like any other package.  The wheel
# carries the templates, the editor's script and the migrations (with their alembic.ini)
# inside the package: nothing from the source tree is copied into the runtime image.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY templates ./templates
RUN pip wheel --no-deps --wheel-dir /dist .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/var/lib/nashra LOG_FORMAT=json

RUN useradd --system --create-home --home-dir /app nashra \
 && mkdir -p /var/lib/nashra && chown nashra /var/lib/nashra
COPY --from=build /dist/ /tmp/dist/
RUN pip install /tmp/dist/*.whl && rm -rf /tmp/dist
WORKDIR /app
USER nashra
EXPOSE 8000
CMD ["nashra", "web", "--host", "0.0.0.0", "--port", "8000"]
