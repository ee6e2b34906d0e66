# One image for the code server, the webserver and the daemon (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /opt/lvm_pipeline
# CPU torch first, so pip does not pull a CUDA build; pass --build-arg TORCH=torch==2.13.0+cu128 etc. for GPUs
ARG TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
RUN pip install --no-cache-dir ${TORCH}
COPY pyproject.toml README.md ./
COPY lvm_pipeline ./lvm_pipeline
RUN pip install --no-cache-dir '.[demo]'
COPY dagster.yaml workspace.yaml ./
ENV DAGSTER_HOME=/opt/lvm_pipeline LVM_DATA_DIR=/data LVM_DAGSTER_DIR=/data/dagster
