# fogmesh: one image for every fogmesh process of the testbed (agents, bridge,
# cloud workers, devices). Brokers use the eclipse-mosquitto image.
# Nothing but pip runs at build time (no apt-get): operators watch with the
# broker's own mosquitto_sub (docker compose exec edge-broker ...), and a build
# that only installs wheels also builds offline against a wheelhouse (the tests
# build it from base images that carry one: tests/standin_images.py).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md topics.md ./
COPY fogmesh fogmesh
COPY broker broker
COPY edge_agent edge_agent
COPY cloud_bridge cloud_bridge
COPY devices devices
COPY simulator simulator
COPY bench bench
COPY ops ops
COPY enrollment enrollment
COPY scenarios scenarios
COPY examples examples
RUN pip install --no-cache-dir .
ENV FOGMESH_STATE_DIR=/var/lib/fogmesh
RUN useradd --system --home /var/lib/fogmesh --create-home fogmesh
USER fogmesh
CMD ["fogmesh", "--help"]
