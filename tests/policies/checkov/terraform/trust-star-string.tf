resource "aws_iam_role" "trust_star" {
  name               = "trust_star"
  assume_role_policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "sts:AssumeRole",
      "Principal": "*"
    }
  ]
}
POLICY
}
