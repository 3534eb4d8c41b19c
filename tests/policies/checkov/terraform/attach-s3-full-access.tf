resource "aws_iam_user_policy_attachment" "s3_full" {
  user       = "ci"
  policy_arn = "arn:aws:iam::aws:policy/AmazonS3FullAccess"
}
