# syntax=docker/dockerfile:1
# JPO image: one image for the Ray head, Ray workers, the Serve app and CI stages.
#
#   docker build -t ghcr.io/your-org/jpo:0.1.0 .                  # CPU torch (default)
#   docker build -t ghcr.io/your-org/jpo:0.1.0-cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # CUDA torch
#
# The CUDA variant only swaps the torch wheel (it bundles the CUDA runtime libraries); the
# GPU driver comes from the node through the NVIDIA device plugin. See configs/k8s/README.md.

# Exact tag of the base image; replace with the digest your registry resolves
# (python:3.11.14-slim-bookworm@sha256:...) to make rebuilds byte-for-byte reproducible.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# Which torch wheel to install: the CPU build by default, a CUDA build for GPU workers.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Keep in step with the torch pin in pyproject.toml.
ARG TORCH_VERSION=2.13.0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every pinned dependency ships manylinux wheels for CPython 3.11, so the builder needs no
# compiler; the venv is built here and copied, alone, into the runtime stage.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from the chosen index, so that installing the project (which pins
# torch==2.13.0, satisfied by 2.13.0+cpu or +cuXXX) keeps this build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# A normal (non-editable) install: the wheel carries configs/ as jpo/configs/ and the demo
# workloads' config.ini as jpo/example_workloads/ (package data, see pyproject.toml), so
# the venv alone is the program and the runtime stage needs no sources.
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY jpo/ jpo/
COPY configs/ configs/
COPY examples/workloads/ examples/workloads/
RUN pip install "./[all]" \
    && pip check

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="jpo" \
      org.opencontainers.image.description="Job-parameter optimizer: Ray head/worker, Serve app and CI stage" \
      org.opencontainers.image.licenses="Apache-2.0"

# wget: KubeRay's default liveness/readiness probes call it inside Ray pods. No compilers
# or headers here (the venv comes prebuilt from the builder stage).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*

# Non-root user; uid 1000 matches the pods' securityContext in ray-cluster.yaml.
RUN groupadd --gid 1000 jpo \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash jpo

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# /app is the working folder of the manifests: configs/ here is what their relative paths
# name (`--config configs/train.yaml`; the package carries the same files), the bundled
# policy seeds the RayService's versions folder (/app/jpo/data/policy), and runs/ and .jpo/
# (checkpoints, audit log, history) are writable. Owned by root: read-only for the user.
WORKDIR /app
COPY configs/ configs/
COPY jpo/data/policy/ jpo/data/policy/
RUN mkdir -p runs .jpo && chown 1000:1000 runs .jpo

# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000:1000

# `docker run IMAGE suggest --config ...` runs the CI stage. KubeRay replaces the
# entrypoint with its own `ray start` command for head and worker pods, and a RayJob
# entrypoint runs `python -m jpo.train ...` inside the cluster.
ENTRYPOINT ["jpo"]
CMD ["--help"]
