resource "aws_iam_role_policy_attachment" "admin" {
  role       = "nodes"
  policy_arn = "arn:aws:iam::aws:policy/AdministratorAccess"
}
