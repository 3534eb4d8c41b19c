resource "azurerm_storage_account" "blobpublic" {
  name                     = "blobpublic"
  resource_group_name      = "rg"
  location                 = "eastus"
  account_tier             = "Standard"
  account_replication_type = "LRS"
  allow_nested_items_to_be_public = true
  min_tls_version                 = "TLS1_2"
}
