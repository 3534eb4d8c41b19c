resource "aws_ecr_repository" "mutable" {
  name = "servestack-serving"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
  }
}
