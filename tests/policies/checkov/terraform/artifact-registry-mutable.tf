resource "google_artifact_registry_repository" "mutable" {
  repository_id = "servestack"
  location      = "us-central1"
  format        = "DOCKER"
}
