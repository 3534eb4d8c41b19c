resource "google_cloud_run_v2_service_iam_member" "public" {
  name   = "svc"
  role   = "roles/run.invoker"
  member = "allUsers"
}
