resource "google_storage_bucket_iam_member" "public" {
  bucket = "models"
  role   = "roles/storage.objectViewer"
  member = "allUsers"
}
