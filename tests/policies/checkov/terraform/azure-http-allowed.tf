resource "azurerm_storage_account" "httpallowed" {
  name                     = "httpallowed"
  resource_group_name      = "rg"
  location                 = "eastus"
  account_tier             = "Standard"
  account_replication_type = "LRS"
  https_traffic_only_enabled      = false
  min_tls_version                 = "TLS1_2"
  allow_nested_items_to_be_public = false
}
