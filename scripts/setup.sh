#!/usr/bin/env bash
# Makes this machine ready for imgflow, idempotently and quickly the second time: the system tools
# imgflow drives, the npm packages, the compiled CLI and the Temporal CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-utils qemu-block-extra   # qcow2 images, clones, conversion; iscsi:// and nbd:// block drivers
  zfs-fuse                      # ZFS pools, datasets, snapshots and send/recv without kernel modules
  tgt libiscsi-bin              # userspace iSCSI target and initiator tools
  nbdkit libnbd-bin             # NBD exports and their readers
  debootstrap squashfs-tools e2fsprogs rsync openssh-server openssh-client
  qemu-user-static file         # builds for other architectures (aarch64 on x86_64; i686, the demo's second arch, where the kernel cannot run i386 itself); file reads binaries' arch in tests
  openssl ca-certificates tar
  docker-registry apache2-utils # the reference OCI registry and htpasswd, for the OCI tests
  python3-aiosmtpd              # a real SMTP server on loopback, for the notification tests
  gnuplot-nox                   # the plot bench/scale.ts draws
)

say() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  [[ $pkg == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    say "missing system packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})"
    exit 1
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  say 'installing npm packages (npm ci)'
  npm ci --no-audit --no-fund --loglevel=error
fi

stamp=dist/.built
if [[ ! -f $stamp ]] || [[ -n $(find common lib workflows activities workers starters tsconfig.json tsconfig.build.json package-lock.json -newer "$stamp" -print -quit) ]]; then
  say 'compiling (tsc)'
  rm -rf dist
  npm run --silent build
  touch "$stamp"
fi

# Builds for aarch64 on this machine: binfmt_misc mounted and qemu's handler registered when none
# serves aarch64 yet (a builder worker does the same at start; nothing is ever unregistered).
if [[ $(uname -m) == x86_64 ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    node --input-type=module -e "
      import { builderPlatform } from './dist/activities/builder/arch.js';
      import { createRunner } from './dist/activities/runner.js';
      import { createLogger } from './dist/lib/logger.js';
      try {
        const p = await builderPlatform('aarch64', { run: createRunner(createLogger('setup', 'warn')) });
        process.stderr.write('setup: builds for aarch64: ' + p.mode + (p.emulator ? ' (' + p.emulator + ')' : '') + '\\n');
      } catch (err) {
        process.stderr.write('setup: ' + err.message + '\\n');
        process.exit(1);
      }
    " || say 'builds for aarch64 cannot run on this machine (see above); their builder worker will refuse to start'
  else
    say 'not root: binfmt_misc for aarch64 builds is left as it is (a root builder worker sets it up at start)'
  fi
fi

node bin/imgflow.js server install-cli >/dev/null
# The production Temporal server, its SQL tool and the Web UI server for `imgflow cluster`.
node bin/imgflow.js cluster install >/dev/null
# oras and cosign, which the OCI tests check imgflow against, built once from the module proxy.
for tool in oras:oras.land/oras/cmd/oras:v1.3.6 cosign:github.com/sigstore/cosign/v2/cmd/cosign:v2.6.5; do
  IFS=: read -r name module version <<<"$tool"; into="$HOME/.cache/imgflow/$name-$version"
  [[ -x $into/$name ]] || { say "building $name $version into $into (once; cosign takes a while)"; mkdir -p "$into"; GOBIN="$into" "$(command -v go || echo /usr/local/go/bin/go)" install "$module@$version"; }
done
