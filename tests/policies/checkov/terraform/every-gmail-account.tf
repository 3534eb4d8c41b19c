resource "google_project_iam_member" "gmail" {
  project = "servestack-prod"
  role    = "roles/viewer"
  member  = "domain:gmail.com"
}
