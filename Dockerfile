# One image for the pipeline and the web server (docker-compose.yml). It installs exactly what README's first
# command installs: `make demo` runs `make install`, which is scripts/install.sh (CPython venv in /app/.venv,
# the pinned torch, the project, htmx from npm; it apt-installs nodejs and npm itself). Test tools (`--dev`)
# stay out. The pinned torch is whatever wheel the package index serves for this platform; PyPI's Linux
# x86_64 wheels bundle CUDA, which is what the `gpu` profile of docker-compose.yml uses.
FROM python:3.11-slim-bookworm
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY . .
RUN scripts/install.sh && rm -rf /var/lib/apt/lists/* /root/.npm
# Every stage reads and writes under WHISPER_ATLAS_DATA: the compose file mounts one named volume there.
ENV PATH=/app/.venv/bin:$PATH WHISPER_ATLAS_DATA=/app/data
EXPOSE 8000
ENTRYPOINT ["whisper-atlas"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
