# imgflow's worker and CLI image. Privileged roles (builder, nas, compute) need the host's
# devices and tools; see docker-compose.yml for how each role is run.
FROM node:20-bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    qemu-utils qemu-block-extra zfsutils-linux tgt targetcli-fb open-iscsi libiscsi-bin nbdkit libnbd-bin \
    debootstrap squashfs-tools e2fsprogs rsync openssh-client openssl ca-certificates tar \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/imgflow
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY dist ./dist
COPY bin ./bin
ENTRYPOINT ["node", "/opt/imgflow/bin/imgflow.js"]
