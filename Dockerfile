# Herald's one image: api, worker, beat, flower and migrate all run it with another command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/herald \
    PATH=/opt/herald/bin:$PATH

RUN pip install --no-cache-dir uv==0.13.9 \
    && useradd --system --create-home --uid 10001 herald

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY herald ./herald
# Bytecode compiled at build time: a process starts without compiling its sources (about 3 s
# of a worker's start, and the image's user cannot write __pycache__ in /app).
RUN uv sync --frozen --no-dev && python -m compileall -q herald

USER herald
ENTRYPOINT ["herald"]
CMD ["--help"]
