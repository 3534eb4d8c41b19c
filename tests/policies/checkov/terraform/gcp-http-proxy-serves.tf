resource "google_compute_url_map" "serves" {
  name            = "serves"
  default_service = "projects/p/global/backendServices/servestack"
}

resource "google_compute_target_http_proxy" "serves" {
  name    = "serves"
  url_map = google_compute_url_map.serves.id
}

resource "google_compute_global_forwarding_rule" "serves" {
  name                  = "serves"
  target                = google_compute_target_http_proxy.serves.id
  port_range            = "80"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
