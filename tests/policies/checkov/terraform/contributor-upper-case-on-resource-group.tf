resource "azurerm_role_assignment" "contributor" {
  scope              = "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/servestack-rg"
  role_definition_id = "/subscriptions/00000000-0000-4000-8000-000000000001/providers/Microsoft.Authorization/roleDefinitions/B24988AC-6180-42A0-AB88-20F7382DD24C"
  principal_id       = "02790a5f-7ed0-b483-fe27-8ec24427216c"
}
