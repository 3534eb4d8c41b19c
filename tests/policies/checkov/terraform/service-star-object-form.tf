resource "aws_iam_role_policy" "service_star" {
  name   = "service_star"
  role   = "serving"
  policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "s3:*",
      "Resource": "*"
    }
  ]
}
POLICY
}
