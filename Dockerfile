# The tradeoff image: the CLI, optuna-dashboard and the drivers for PostgreSQL.
FROM python:3.11-slim
WORKDIR /app
# the real task's data (`--task fashion-mnist`): Zalando's Fashion-MNIST as Debian packages it
RUN apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*
# torch comes from the default index with the package; for a smaller CPU-only image, install
# torch and torchvision from PyTorch's CPU wheel index in a line before this one.
COPY pyproject.toml README.md ./
COPY search ./search
COPY spaces ./spaces
COPY storage ./storage
# [s3]: the artifact store on S3-compatible storage (deploy/kubernetes/)
RUN pip install --no-cache-dir '.[s3]'
ENV TRADEOFF_ARTIFACTS=/artifacts TRADEOFF_CACHE=/cache
ENTRYPOINT []
