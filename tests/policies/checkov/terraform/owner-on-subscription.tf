resource "azurerm_role_assignment" "owner" {
  scope                = "/subscriptions/00000000-0000-4000-8000-000000000001"
  role_definition_name = "Owner"
  principal_id         = "02790a5f-7ed0-b483-fe27-8ec24427216c"
  principal_type       = "ServicePrincipal"
}
