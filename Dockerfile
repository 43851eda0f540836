# fogmesh: one image for every fogmesh process of the testbed (agents, bridge,
# cloud workers, devices). Brokers use the eclipse-mosquitto image.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends mosquitto-clients \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md topics.md ./
COPY fogmesh fogmesh
COPY broker broker
COPY edge_agent edge_agent
COPY cloud_bridge cloud_bridge
COPY devices devices
COPY simulator simulator
COPY bench bench
COPY deploy deploy
COPY scenarios scenarios
COPY examples examples
RUN pip install --no-cache-dir .
ENV FOGMESH_STATE_DIR=/var/lib/fogmesh
RUN useradd --system --home /var/lib/fogmesh --create-home fogmesh
USER fogmesh
CMD ["fogmesh", "--help"]
