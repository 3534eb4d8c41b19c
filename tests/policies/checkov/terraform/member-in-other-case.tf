resource "google_storage_bucket_iam_member" "other_case" {
  bucket = "b"
  role   = "roles/storage.objectViewer"
  member = "AllUsers"
}
