# The image fly.toml deploys: one image, run as `nofx web` or `nofx worker`.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 nofx

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY prompts ./prompts
COPY app.yml ./
RUN pip install --no-cache-dir .

USER nofx
ENV NOFX_DATA_DIR=/data PORT=3000 NOFX_PROMPTS_DIR=/app/prompts
EXPOSE 3000
CMD ["nofx", "web", "--host", "0.0.0.0"]
