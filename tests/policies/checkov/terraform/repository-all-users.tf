resource "google_artifact_registry_repository_iam_member" "public" {
  repository = "servestack"
  location   = "us-central1"
  role       = "roles/artifactregistry.reader"
  member     = "allUsers"
}
