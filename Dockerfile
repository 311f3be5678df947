# One image for the API, the workers and the one-shot migration.
# CPU build by default; for GPU workers build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml README.md alembic.ini ./
COPY gan_core gan_core
COPY ganforge ganforge
COPY jobs jobs
COPY api api
COPY worker worker
COPY migrations migrations
COPY presets presets
# Editable, so jobs/migrate.py finds /app/migrations beside the package.
RUN pip install -e .
RUN useradd --create-home ganforge
USER ganforge
EXPOSE 8080
CMD ["ganforge", "api", "--host", "0.0.0.0", "--port", "8080"]
