// Validates custom resources against their published CRD schemas, as the @kubernetes-models packages
// carry them (Gateway API, Envoy Gateway, cert-manager, KEDA, Prometheus Operator, GKE).
//
//   node servestack/offline/validate_crds.mjs < objects.json
//
// Reads a JSON array of Kubernetes objects and writes a JSON array with one result per object:
// {"error": null} when valid, {"error": "..."} when not, {"skipped": "why"} when no package has its schema.
import { readFileSync } from "node:fs";

// API group -> the @kubernetes-models package that carries its schemas.
const PACKAGES = {
  "gateway.networking.k8s.io": "gateway-api",
  "gateway.networking.x-k8s.io": "gateway-api",
  "gateway.envoyproxy.io": "envoy-gateway",
  "cert-manager.io": "cert-manager",
  "acme.cert-manager.io": "cert-manager",
  "keda.sh": "keda",
  "monitoring.coreos.com": "prometheus-operator",
  "monitoring.googleapis.com": "gke",
};

async function validate(object) {
  const [group, version] = String(object.apiVersion || "").split("/");
  const pkg = PACKAGES[group];
  if (!pkg || !version) {
    return { skipped: `no published schema for ${object.apiVersion} ${object.kind}` };
  }
  let model;
  try {
    model = await import(`@kubernetes-models/${pkg}/${group}/${version}/${object.kind}`);
  } catch {
    return { skipped: `@kubernetes-models/${pkg} has no ${group}/${version} ${object.kind}` };
  }
  const Model = model[object.kind];
  try {
    new Model(object).validate();
    return { error: null };
  } catch (error) {
    return { error: String(error.message || error) };
  }
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const object of objects) {
  results.push(await validate(object));
}
process.stdout.write(JSON.stringify(results));
