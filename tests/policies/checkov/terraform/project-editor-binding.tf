resource "google_project_iam_binding" "editor" {
  project = "servestack-prod"
  role    = "roles/editor"
  members = ["serviceAccount:ss-serving@servestack-prod.iam.gserviceaccount.com"]
}
