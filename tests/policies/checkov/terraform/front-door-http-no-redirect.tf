resource "azurerm_cdn_frontdoor_route" "http" {
  name                          = "http"
  cdn_frontdoor_endpoint_id     = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cdn/profiles/p/afdEndpoints/e"
  cdn_frontdoor_origin_group_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cdn/profiles/p/originGroups/g"
  cdn_frontdoor_origin_ids      = []
  supported_protocols           = ["Http", "Https"]
  patterns_to_match             = ["/*"]
  https_redirect_enabled        = false
}
