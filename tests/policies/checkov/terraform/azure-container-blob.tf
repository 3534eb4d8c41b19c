resource "azurerm_storage_container" "blob" {
  name                  = "models"
  storage_account_name  = "models"
  container_access_type = "blob"
}
