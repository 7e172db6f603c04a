#!/usr/bin/env sh
# Stop-gap until Flux sends service-account tokens itself: a dockerconfigjson secret holding a
# registry-audience token of the source-controller service account. Refresh it well before it
# expires (1 hour here): run this every 30 minutes, e.g. from a CronJob. An expired token makes
# every pull fail with "token expired at …" (docs/platforms/flux.md).
set -eu
REGISTRY=registry.example.com
TOKEN=$(kubectl -n flux-system create token source-controller --audience "$REGISTRY" --duration 1h)
kubectl -n flux-system create secret docker-registry berth-pull \
  --docker-server="$REGISTRY" --docker-username=jwt --docker-password="$TOKEN" \
  --dry-run=client -o yaml | kubectl apply -f -
# Then in the OCIRepository: spec.secretRef.name: berth-pull
