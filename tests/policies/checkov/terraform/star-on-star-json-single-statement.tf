resource "aws_iam_role_policy" "star_on_star" {
  name   = "star_on_star"
  role   = "serving"
  policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": {
    "Effect": "Allow",
    "Action": "*",
    "Resource": "*"
  }
}
POLICY
}
