resource "google_project_iam_member" "owner" {
  project = "servestack-prod"
  role    = "roles/owner"
  member  = "serviceAccount:ss-serving@servestack-prod.iam.gserviceaccount.com"
}
