# One recipe for the API, the workers and the one-shot migration. docker-compose builds it twice:
# the API / migration image with the CPU build of torch (the default here), the GPU worker's with a
# CUDA build (build arg TORCH_INDEX_URL, e.g. https://download.pytorch.org/whl/cu130).
FROM python:3.11.11-slim-bookworm
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# torch from its own index first (the project's range is then satisfied; PyPI would pick a CUDA build).
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY gan_core gan_core
COPY ganforge ganforge
COPY jobs jobs
COPY api api
COPY worker worker
COPY migrations migrations
COPY presets presets
# A real install, as `pip install 'ganforge[service]'` gives a user (code, migrations and presets in
# site-packages; versions from constraints.txt, torch 2.13.0+cpu / +cuXXX both match its pin), then
# the sources go: nothing runs from a checkout.
RUN pip install -c constraints.txt ".[service]" && rm -rf /src
WORKDIR /app
RUN useradd --create-home ganforge
USER ganforge
EXPOSE 8080
CMD ["ganforge", "api", "--host", "0.0.0.0", "--port", "8080"]
