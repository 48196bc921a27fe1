# One image recipe for every Switchboard service, built from the repository root:
#
#   docker build --build-arg SERVICE=gateway -t switchboard/gateway .
#
# SERVICE is gateway, messages, delivery or presence; the image runs `switchboard-$SERVICE`
# (`serve` by default; pass `migrate` to apply that service's migrations). SERVICE=all installs
# every service, for the one-shot migration job in compose.yaml.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
# Pinned so that builds repeat: the uv release developers use to write uv.lock.
ARG UV_VERSION=0.13.9
RUN test -n "$SERVICE" || { echo "set --build-arg SERVICE=gateway|messages|delivery|presence|all" >&2; exit 1; }
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Third-party dependencies first, from the lock and the member manifests only, so that this layer
# is rebuilt when dependencies change and not on every source edit.
COPY pyproject.toml uv.lock ./
COPY libs/contracts/pyproject.toml libs/contracts/
COPY libs/runtime/pyproject.toml libs/runtime/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/messages/pyproject.toml services/messages/
COPY services/delivery/pyproject.toml services/delivery/
COPY services/presence/pyproject.toml services/presence/
RUN if [ "$SERVICE" = all ]; then set -- --all-packages; else set -- --package "switchboard-$SERVICE"; fi \
    && uv sync --frozen --no-dev --no-install-workspace "$@"

# Then the workspace packages themselves, installed as wheels (not editable), so the runtime stage
# needs only the virtual environment and no source tree.
COPY libs libs
COPY services services
RUN if [ "$SERVICE" = all ]; then set -- --all-packages; else set -- --package "switchboard-$SERVICE"; fi \
    && uv sync --frozen --no-dev --no-editable "$@"


FROM ${PYTHON_IMAGE}
ARG SERVICE
ENV SERVICE=${SERVICE} \
    PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHAT_HOST=0.0.0.0
RUN useradd --system --uid 10001 --no-create-home switchboard
COPY --from=build /app/.venv /app/.venv
WORKDIR /app
USER switchboard
# exec: the service replaces the shell as PID 1, so it receives SIGTERM itself and stops gracefully.
ENTRYPOINT ["/bin/sh", "-c", "exec \"switchboard-$SERVICE\" \"$@\"", "switchboard"]
CMD ["serve"]
