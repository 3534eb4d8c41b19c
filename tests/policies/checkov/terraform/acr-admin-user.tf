resource "azurerm_container_registry" "admin" {
  name                = "servestackadmin"
  resource_group_name = "rg"
  location            = "eastus"
  sku                 = "Premium"
  admin_enabled       = true
}
