resource "azurerm_container_registry" "anonymous" {
  name                   = "servestackanon"
  resource_group_name    = "rg"
  location               = "eastus"
  sku                    = "Standard"
  anonymous_pull_enabled = true
}
