# One image for both the pipeline and the web server (see docker-compose.yml).
FROM python:3.11-slim-bookworm
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make nodejs npm apt-utils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN scripts/install.sh
ENV PATH=/app/.venv/bin:$PATH WHISPER_ATLAS_DATA=/app/data
EXPOSE 8000
CMD ["whisper-atlas", "serve", "--host", "0.0.0.0", "--port", "8000"]
