resource "azurerm_role_definition" "deployer" {
  name  = "deployer"
  scope = "/subscriptions/00000000-0000-4000-8000-000000000001"
  permissions {
    actions     = ["*"]
    not_actions = []
  }
  assignable_scopes = ["/subscriptions/00000000-0000-4000-8000-000000000001"]
}
