# The image fly.toml deploys: one image, run as `nofx web` or `nofx worker`.
#
# Workers run repository code (gates) in a bubblewrap sandbox, installed below; without it no gate runs.
# bubblewrap needs user namespaces and a fresh /proc, which Docker's defaults refuse (seccomp profile,
# AppArmor, masked /proc paths), so run workers (and `serve`) with:
#   docker run --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#              --security-opt systempaths=unconfined IMAGE nofx worker
# (a custom seccomp profile that allows clone/unshare with CLONE_NEWUSER also works), on a host that allows
# unprivileged user namespaces. `docker run <those flags> IMAGE nofx doctor` prints what the container gives.
# The web process runs no repository code and needs none of this. Fly.io machines are VMs: nothing to add.
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
RUN pip install --no-cache-dir ".[s3]"

USER nofx
ENV NOFX_DATA_DIR=/data PORT=3000 NOFX_PROMPTS_DIR=/app/prompts
EXPOSE 3000
CMD ["nofx", "web", "--host", "0.0.0.0"]
