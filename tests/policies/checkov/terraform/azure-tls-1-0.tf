resource "azurerm_storage_account" "tlsold" {
  name                     = "tlsold"
  resource_group_name      = "rg"
  location                 = "eastus"
  account_tier             = "Standard"
  account_replication_type = "LRS"
  min_tls_version                 = "TLS1_0"
  allow_nested_items_to_be_public = false
}
