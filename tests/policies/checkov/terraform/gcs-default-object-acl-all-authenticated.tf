resource "google_storage_default_object_acl" "all_auth" {
  bucket      = "models"
  role_entity = ["READER:allAuthenticatedUsers"]
}
