#!/usr/bin/env bash
# The same loop as `mlops dev demo`, on a real cluster: kind + Docker. Needs docker, kind, kubectl,
# helm and this repository's `mlops` CLI (make setup; .venv/bin/mlops). From the repository root:
#   examples/kind/run.sh            # build, load, install, run the loop
#   kind delete cluster --name mlops   # when done
set -euo pipefail
CLUSTER=${CLUSTER:-mlops}
MLOPS=${MLOPS:-.venv/bin/mlops}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."

docker build -f images/Dockerfile --target operator -t mlops-operator:dev .
docker build -f images/Dockerfile --target runtime -t mlops-runtime:dev .
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kubectl config use-context "kind-$CLUSTER"
kind load docker-image --name "$CLUSTER" mlops-operator:dev mlops-runtime:dev

kubectl create namespace mlops-demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f "$here/minio.yaml"
helm upgrade --install mlops-operator charts/mlops-operator --namespace mlops-system --create-namespace \
  --values "$here/values.yaml" --wait --timeout 5m
kubectl -n mlops-demo rollout status deployment/minio --timeout 5m

# the loop's data pipeline writes training data from this machine: MinIO through a port-forward
kubectl -n mlops-demo port-forward svc/minio 9000:9000 >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
export AWS_ACCESS_KEY_ID=mlops-demo AWS_SECRET_ACCESS_KEY=mlops-demo-secret AWS_DEFAULT_REGION=us-east-1
for _ in $(seq 30); do (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null && break; sleep 1; done
# pod IPs are inside kind's network: traffic goes through the apiserver's pod proxy
"$MLOPS" dev loop --namespace mlops-demo --s3-endpoint http://127.0.0.1:9000 --create-buckets --via-apiserver
