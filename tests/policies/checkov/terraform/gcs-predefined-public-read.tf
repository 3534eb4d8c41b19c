resource "google_storage_bucket" "public_read" {
  name     = "models-public-read"
  location = "US"
}

resource "google_storage_bucket_acl" "public_read" {
  bucket         = google_storage_bucket.public_read.name
  predefined_acl = "publicRead"
}
