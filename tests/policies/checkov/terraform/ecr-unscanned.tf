resource "aws_ecr_repository" "unscanned" {
  name                 = "unscanned"
  image_tag_mutability = "IMMUTABLE"
  encryption_configuration {
    encryption_type = "KMS"
  }
}
