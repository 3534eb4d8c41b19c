resource "google_storage_bucket_acl" "entities" {
  bucket      = "models"
  role_entity = ["OWNER:project-owners-1", "READER:allUsers"]
}
